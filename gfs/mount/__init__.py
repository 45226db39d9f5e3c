"""`gfs mount`: the file system as a FUSE mount (mfusepy over Debian's libfuse3).

operations.py maps FUSE calls onto the client; handles.py holds what an open file is (a read
view of one version, or a write spooled locally and put whole at close); blockcache.py bounds the
mount's memory for file data; fuse_binding.py copies reads straight into libfuse's buffer;
runner.py mounts in the foreground or as a background process; guard.py ends that process when
its mount is gone and keeps it from unmounting any other.
"""
