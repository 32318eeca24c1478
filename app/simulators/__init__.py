"""Local stand-ins for the providers (SPEC.md "Local simulators"), registered only while in
use (never in production; the AT one without AT_API_KEY, the Daraja one without
MPESA_CONSUMER_KEY): `make run` without credentials and the tests talk to these over HTTP."""
