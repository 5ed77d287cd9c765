"""The run's inputs: the guest root filesystem, the kernel (found or built), the CI
stand-in kernel, and the host tools they need."""
