"""WebRTC<->SIP routing for OpenSIPS: a pure decision core (core, profiles, model) and a thin host adapter (host)."""
