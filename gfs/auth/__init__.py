"""Authentication and authorization shared by masters, chunkservers and clients: the cluster
secret and the keys derived from it (`secret`), daemon-to-daemon request signatures
(`daemon`), chunk capabilities (`capability`)."""
