"""Two example services for the bot library (:mod:`client.bot`), run with ``e2e-bot``.

* :mod:`client.examples.parcel_bot`: parcel tracking (a lookup, a subscription by quick reply, and
  notifications from a simulated depot feed to the subscribers only);
* :mod:`client.examples.flight_bot`: flight status and booking changes through menus of quick replies.

Each is a module with ``setup(bot)``: ``e2e-bot client.examples.parcel_bot --account parcels ...``
(or the path of the file).  docs/business.md walks through both.
"""
