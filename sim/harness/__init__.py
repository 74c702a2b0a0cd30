"""What turns simulated parts into a running station: the charger's hardware assembled with its EVs
(``charger``), the agent run as a separate process (``agent_supervisor``), the HTTP control API and its
command-line client (``control_api``, ``control_cli``) and ``make run``'s live demo (``demo``).
``python -m sim up`` (``sim/__main__.py``) puts them together.
"""
