"""I/O: fio jobs and their logs, filesystems on the fabric's namespaces."""
