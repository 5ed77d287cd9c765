"""The NVMe target (nvmet) through configfs, and its backing stores."""
