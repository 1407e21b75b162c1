"""A real OpenSIPS with our cfg and Python on loopback, plus rtpengine.

For the end-to-end tests and ``python3 -m rig.up``.

Nothing here runs inside OpenSIPS (that is ``pyscripts/``); this is the test
bench around it, so it may use what requirements-dev.txt installs.
"""
