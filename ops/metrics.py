"""Prometheus metrics of the job system, computed when Prometheus scrapes.

Why a custom collector that reads the Job table, and not counters bumped by
the workers: the numbers are born in worker processes (many, on many hosts,
restarted at will) and read through web processes (several gunicorn
workers). Counters kept in process memory would need prometheus-client's
multiprocess mode (a shared directory of mmap files, per host, cleaned on
restart) or a push gateway, and would still miss what happened while a
process was down. The Job table already records every start and end, so a
scrape turns it into metrics with a few aggregate queries (ops/stats.py),
and any web process gives the same answer.

The counters and histograms count the jobs that finished since the start of
the current hour, so they reset to zero every hour, on the hour, in every
process alike. Prometheus' rate() and increase() treat that as a counter
reset, losing at most one scrape interval per hour; counting from a fixed
point instead would make each query grow with the table, and the hourly
pruning of old jobs would look like resets anyway.

Metrics (labels):
  kit_jobs{queue,task,status}                  jobs not finished yet, by status
  kit_jobs_finished_total{queue,task,status}   jobs finished (this hour)
  kit_job_runtime_seconds{queue,task}          histogram, started -> finished
  kit_job_wait_seconds{queue,task}             histogram, queued -> started
  kit_job_error_ratio{queue,task}              failed / finished, last OPS_METRICS_RECENT_SECONDS
  kit_queue_messages{queue}                    messages ready on the broker
  kit_queue_consumers{queue}                   consumers of the queue
  kit_broker_up                                1 if the broker answered
  kit_workers_online                           workers that answered the kit_resources broadcast
  kit_worker_up{worker}                        1 per worker that answered
  kit_job_oldest_age_seconds{queue,status}     oldest PENDING / QUEUED job's wait, 0 if none
  kit_jobs_finished_last_hour{queue,status}    jobs finished in the last 60 minutes, 0 if none
  kit_dead_letter_messages                     messages in the dead-letter queue
  kit_worker_cpu_seconds_total{worker,process} CPU of the main process / its pool (process="main"|"pool")
  kit_worker_resident_memory_bytes{worker,process}  RSS of the same
  kit_worker_pool_processes{worker}            pool children alive
  kit_alert_threshold{threshold}                  the OPS_ALERT_* settings the alert rules compare with

Series the alert rules test are emitted with value 0 rather than left out
(every queue and waiting status has an age, every queue a depth), so a rule
is a plain comparison and needs no absent().
"""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from jobs.models import FINISHED_STATUSES
from jobs.queues import Queue
from ops import broker, stats


def current_period_start():
    """When the counters last reset: the start of this hour."""
    return timezone.now().replace(minute=0, second=0, microsecond=0)


class JobCollector(Collector):
    def collect(self):
        yield from self.active_jobs()
        yield from self.finished_jobs()
        yield from self.broker_queues()
        yield from self.workers()
        yield from self.waiting_jobs()
        yield from self.last_hour()
        yield from self.dead_letters()
        yield from self.worker_resources()
        yield self.alert_thresholds()

    def active_jobs(self):
        family = GaugeMetricFamily("kit_jobs", "Jobs not finished yet, by status.", labels=["queue", "task", "status"])
        for (queue, task, status), count in sorted(stats.active_counts().items()):
            family.add_metric([queue, task, status], count)
        yield family

    def finished_jobs(self):
        now = timezone.now()
        groups = stats.finished_since(
            current_period_start(), recent_since=now - timedelta(seconds=settings.OPS_METRICS_RECENT_SECONDS)
        )
        finished = CounterMetricFamily(
            "kit_jobs_finished",
            "Jobs finished since the start of the current hour (resets hourly), by final status.",
            labels=["queue", "task", "status"],
        )
        runtime = HistogramMetricFamily(
            "kit_job_runtime_seconds",
            "Seconds from start to end of jobs finished this hour (resets hourly).",
            labels=["queue", "task"],
        )
        wait = HistogramMetricFamily(
            "kit_job_wait_seconds",
            "Seconds from queued to started of jobs finished this hour (resets hourly).",
            labels=["queue", "task"],
        )
        error_ratio = GaugeMetricFamily(
            "kit_job_error_ratio",
            f"Failed, dead or lost jobs over all finished jobs, in the last {settings.OPS_METRICS_RECENT_SECONDS} s.",
            labels=["queue", "task"],
        )
        runtimes: dict[tuple[str, str], list[stats.Histogram]] = defaultdict(list)
        waits: dict[tuple[str, str], list[stats.Histogram]] = defaultdict(list)
        recent_total: dict[tuple[str, str], int] = defaultdict(int)
        recent_failed: dict[tuple[str, str], int] = defaultdict(int)
        for group in groups:
            key = (group.queue, group.task)
            finished.add_metric([group.queue, group.task, group.status], group.count)
            runtimes[key].append(group.runtime)
            waits[key].append(group.wait)
            recent_total[key] += group.recent
            if group.status in stats.FAILED_STATUSES:
                recent_failed[key] += group.recent
        for key, histograms in sorted(runtimes.items()):
            _add_histogram(runtime, key, histograms)
        for key, histograms in sorted(waits.items()):
            _add_histogram(wait, key, histograms)
        for key, total in sorted(recent_total.items()):
            if total:  # no jobs, no ratio (rather than a made-up 0)
                error_ratio.add_metric(list(key), recent_failed[key] / total)
        yield from (finished, runtime, wait, error_ratio)

    def broker_queues(self):
        depths = broker.queue_depths()
        up = GaugeMetricFamily("kit_broker_up", "1 if the broker answered the last queue-depth query.")
        up.add_metric([], 0 if depths is None else 1)
        yield up
        messages = GaugeMetricFamily("kit_queue_messages", "Messages ready on the broker.", labels=["queue"])
        consumers = GaugeMetricFamily(
            "kit_queue_consumers", "Consumers (worker connections) of the queue.", labels=["queue"]
        )
        for queue, depth in sorted((depths or {}).items()):
            messages.add_metric([queue], depth.messages)
            if depth.consumers is not None:  # unknown on the embedded broker: no sample, not a 0
                consumers.add_metric([queue], depth.consumers)
        yield from (messages, consumers)

    def workers(self):
        names = broker.workers_online()
        online = GaugeMetricFamily("kit_workers_online", "Workers that answered the last broadcast.")
        online.add_metric([], len(names))
        up = GaugeMetricFamily(
            "kit_worker_up", "1 for each worker that answered the last broadcast.", labels=["worker"]
        )
        for name in names:
            up.add_metric([name], 1)
        yield from (online, up)

    def waiting_jobs(self):
        family = GaugeMetricFamily(
            "kit_job_oldest_age_seconds",
            "Seconds the oldest job of the queue has been waiting in this status "
            "(PENDING: for the outbox relay; QUEUED: for a worker), counted from when it was due; 0 if none.",
            labels=["queue", "status"],
        )
        ages = stats.oldest_waiting(timezone.now())
        queues = sorted({queue.value for queue in Queue} | {queue for queue, _ in ages})
        for queue in queues:
            for status in stats.WAITING_STATUSES:
                family.add_metric([queue, status], ages.get((queue, status), 0.0))
        yield family

    def last_hour(self):
        # A sliding hour, unlike the counters' calendar hour: an alert on
        # "a job went LOST or DEAD in the last hour" is then a comparison,
        # and a first LOST job shows at once (increase() of a counter series
        # that first appears at 1 reads 0).
        family = GaugeMetricFamily(
            "kit_jobs_finished_last_hour",
            "Jobs that finished in the last 60 minutes, by queue and final status; 0 if none.",
            labels=["queue", "status"],
        )
        counts = stats.finished_by_queue(timezone.now() - timedelta(hours=1))
        queues = sorted({queue.value for queue in Queue} | {queue for queue, _ in counts})
        for queue in queues:
            for status in FINISHED_STATUSES:
                family.add_metric([queue, status], counts.get((queue, status), 0))
        yield family

    def dead_letters(self):
        messages = broker.dead_letter_messages()
        if messages is None:  # the broker did not answer: kit_broker_up says so
            return
        family = GaugeMetricFamily(
            "kit_dead_letter_messages", "Messages in the dead-letter queue: rejected or expired, never to run."
        )
        family.add_metric([], messages)
        yield family

    def worker_resources(self):
        cpu = CounterMetricFamily(
            "kit_worker_cpu_seconds",
            "CPU seconds (user + system) of a worker's main process, and of its live pool children summed "
            "(a recycled child takes its seconds with it: rate() reads that as a reset).",
            labels=["worker", "process"],
        )
        memory = GaugeMetricFamily(
            "kit_worker_resident_memory_bytes",
            "Resident memory of a worker's main process, and of its pool children summed.",
            labels=["worker", "process"],
        )
        processes = GaugeMetricFamily(
            "kit_worker_pool_processes", "Pool children of the worker alive now.", labels=["worker"]
        )
        for worker in broker.workers_resources():
            for process, used in (("main", worker.main), ("pool", worker.pool)):
                cpu.add_metric([worker.name, process], used.cpu_seconds)
                memory.add_metric([worker.name, process], used.rss_bytes)
            processes.add_metric([worker.name], worker.pool_processes)
        yield from (cpu, memory, processes)

    def alert_thresholds(self):
        family = GaugeMetricFamily(
            "kit_alert_threshold",
            "The OPS_ALERT_* settings, for the alert rules (compose/prometheus/alerts.yml) to compare with.",
            labels=["threshold"],
        )
        for name, value in sorted(settings.OPS_ALERT_THRESHOLDS.items()):
            family.add_metric([name], value)
        return family


def _add_histogram(family: HistogramMetricFamily, labels: tuple[str, str], histograms: list[stats.Histogram]) -> None:
    """One Prometheus histogram from the per-status ones of a queue and task."""
    bounds = histograms[0].bounds
    cumulative = [sum(h.buckets[index] for h in histograms) for index in range(len(bounds))]
    count = sum(h.count for h in histograms)
    buckets = [(_le(bound), value) for bound, value in zip(bounds, cumulative, strict=True)] + [("+Inf", count)]
    family.add_metric(list(labels), buckets, sum_value=sum(h.total for h in histograms))


def _le(bound: float) -> str:
    return repr(float(bound))


def registry() -> CollectorRegistry:
    """A registry holding only the job collector: the web process's own
    metrics (its memory, its GC) say nothing about the jobs."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(JobCollector())
    return collectors
