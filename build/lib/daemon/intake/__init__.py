"""Intake: the runners that take mail in (SMTP/LMTP, IMAP) and the worker that
turns stored messages into tickets through the desk."""
