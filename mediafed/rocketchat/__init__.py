"""Rocket.Chat front-end: the call API the mediafed Rocket.Chat App uses, its
signed webhooks, the bridge table and the Rocket.Chat client for call notices.

- :mod:`.frontend` adds the call API to the node's HTTP application;
- :mod:`.handlers` serves ``/api/v1/calls`` and ``/api/v1/bridges`` (documented
  in ``openapi.yaml``, served at ``/api/v1/openapi.yaml``), :mod:`.auth` checks
  their bearer tokens, :mod:`.models` their bodies;
- :mod:`.service` keeps calls and their participants; :mod:`.rooms` maps
  external rooms to mediafed rooms;
- :mod:`.webhooks` signs and delivers call events; :mod:`.client` speaks
  Rocket.Chat's REST and DDP APIs; :mod:`.config` is the ``[rocketchat]`` section;
- :mod:`.bridge_cli` adds ``mediafed bridge``.
"""
