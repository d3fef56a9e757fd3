"""py-amqp: publishing on a confirm-mode channel without waiting per message.

Written against amqp 5.4.2. py-amqp's Channel.confirm_select() makes
basic_publish wait for each message's confirm (one round trip per message);
its public API has no pipelined form. The kit publishes a batch and then
waits for all the confirms together (jobs' bulk publishing), so it sends on
the channel's plain publish while the channel is in confirm mode, and counts
the basic_ack / basic_nack events itself.
"""

from upstream import UpstreamChanged

WRITTEN_AGAINST = "5.4.2"


class Published:
    """How many messages went out on the channel: in confirm mode the n-th
    message's delivery tag is n, whoever sent it (a task message, or a
    task-sent event after it)."""

    count = 0


def pipeline_confirms(channel) -> Published:
    """Put `channel` in confirm mode, with basic_publish not waiting for each
    confirm; the caller listens to channel.events["basic_ack"/"basic_nack"]
    and reads the returned counter for the delivery tags."""
    plain_publish = getattr(channel, "_basic_publish", None)
    if plain_publish is None or not hasattr(channel, "_confirm_selected"):
        raise UpstreamChanged("amqp", WRITTEN_AGAINST, "Channel has no _basic_publish / _confirm_selected")
    channel.confirm_select()
    published = Published()

    def publish_counted(*args, **kwargs):
        published.count += 1
        return plain_publish(*args, **kwargs)

    # confirm_select() swaps in the waiting publish; swap the plain one back.
    # _confirm_selected stays true so a second confirm_select() is a no-op.
    channel._confirm_selected = True
    channel.basic_publish = publish_counted
    return published
