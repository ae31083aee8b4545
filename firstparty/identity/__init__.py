"""Identity: the visitor cookie, first/last touch, personal data, phone OTP, devices and users."""
