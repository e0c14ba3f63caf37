"""The progress lines of the ``ami`` runner (``salt-run ami.build``, ``salt-run ami.watch``):
each progress event's message alone, as it comes, where Salt's default outputter would
spread one event over six lines. salt-run uses it for the events that name it; ``--out``
replaces it (the runner then sends no progress: the output stays data).

CLI Example:

.. code-block:: bash

    salt-run ami.build flavour=debian-postgres
"""
__virtualname__ = "ami_progress"


def __virtual__():
    return __virtualname__


def output(data, **kwargs):  # pylint: disable=unused-argument
    """The message of a runner's progress event (salt-run hands over {"suffix", "event"})."""
    event = data.get("event", data) if isinstance(data, dict) else data
    if isinstance(event, dict) and "message" in event:
        return str(event["message"])
    return str(data)
