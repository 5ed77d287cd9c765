"""What every selftest is checked against: requirements (SKIP reasons), the kernel log,
leftovers and kmemleak, and the per-test gates that apply them."""
