"""The worker's consumer, with one change for quorum mode: Celery's native
delayed delivery (which carries countdowns and retry backoffs on quorum
queues, jobs.queues.QUORUM_EXCHANGE) binds every queue of the app, but the
worker declared only the ones it consumes, so on a fresh cluster the binding
of every other lane fails with 404 NOT_FOUND and a delayed message for those
lanes would have nowhere to go. Here every kit queue, and the dead-letter
queue the lanes dead-letter to (with the kit's own copy of it), is declared
first (declares are idempotent, so each worker start and each reconnect to another node repeats them safely).

Selected by CELERY_WORKER_CONSUMER (config/settings/base.py).
"""

from celery.worker.consumer import Consumer
from celery.worker.consumer.delayed_delivery import DelayedDelivery
from django.conf import settings

from jobs.queues import dead_letter_notice_queue, dead_letter_queue
from upstream.celery import DELAYED_DELIVERY_STEP, check_delayed_delivery_binds_queues, steps_with

check_delayed_delivery_binds_queues()


class KitQueuesDelayedDelivery(DelayedDelivery):
    def _bind_queues(self, app, connection) -> None:
        channel = connection.channel()
        try:
            for queue in app.amqp.queues.values():
                queue(channel).declare()
            dead_letter_queue(settings.KIT_QUEUE_TYPE)(channel).declare()
            dead_letter_notice_queue(settings.KIT_QUEUE_TYPE)(channel).declare()
        finally:
            channel.close()
        super()._bind_queues(app, connection)


class KitConsumer(Consumer):
    class Blueprint(Consumer.Blueprint):
        default_steps = steps_with(
            Consumer.Blueprint.default_steps, DELAYED_DELIVERY_STEP, "jobs.worker_consumer:KitQueuesDelayedDelivery"
        )
