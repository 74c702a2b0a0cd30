"""The simulated OCPP 1.6J central system (``python -m sim csms``, docs/sim-csms.md).

``server`` is the websockets server and its per-connection sessions; ``ocppj`` OCPP-J framing and
payload validation with the 1.6 error codes; ``behaviour`` what it is scripted to answer; ``logic`` its
answers to each request; ``state`` what it knows per charge point; ``transcript`` what crossed the wire;
``charging_profiles`` builds Smart Charging profiles from plain values; ``cli`` the command line.
"""
