"""The NVMe host side in the guest: fabrics options, connecting and the controllers'
sysfs views, native multipath and dm-multipath."""
