"""Security: tlshd and kernel TLS, PSKs and keyrings, DH-HMAC-CHAP keys."""
