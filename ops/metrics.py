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
  kit_workers_online                           workers that answered a ping
  kit_worker_up{worker}                        1 per worker that answered
"""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

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
        online = GaugeMetricFamily("kit_workers_online", "Workers that answered a ping.")
        online.add_metric([], len(names))
        up = GaugeMetricFamily("kit_worker_up", "1 for each worker that answered a ping.", labels=["worker"])
        for name in names:
            up.add_metric([name], 1)
        yield from (online, up)


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
