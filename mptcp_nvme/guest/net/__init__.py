"""Guest network plumbing: namespaces, the pyroute2 topology builder, sock_diag and
the transport proof, MPTcpExt counters, packet capture and socket streams."""
