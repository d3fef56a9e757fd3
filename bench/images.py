"""python -m bench.images [--quick] [--images N] [--rounds R] [--concurrency C]

Image throughput: N synthetic 12-megapixel photos into the three default
renditions (settings.MEDIA_TASKS_RENDITIONS), three ways, each with C
processes, so the ratios compare pipelines and not parallelism:

  kit    media_tasks.renditions_create jobs through a real worker (prefork,
         C children) on RabbitMQ, rows in PostgreSQL, files in MEDIA_ROOT
  naive  a pool of C processes; per image and per rendition: Image.open,
         exif_transpose, resize (ImageOps.fit for the crop) and save, with
         Pillow's defaults: what a first version usually looks like
  limit  a pool of C processes calling services.renditions_create with no
         queue at all: the kit minus Celery, RabbitMQ and job tracking

Per round each variant runs once (kit, naive, limit; the order rotated
round by round, bench.harness.rate_rounds), so load from whatever else runs
on the machine lands on all three alike; the ratios are the result, the
absolute figures belong to this machine on this day. The kit's window is
its jobs' first start to last finish as the worker recorded them (worker
start-up and the uploads, made while the worker starts parked, are outside
it); the pools' window is the map() call on a started pool.

Needs PostgreSQL and RabbitMQ on loopback; uses its own database
(kit_bench_images) and vhost (kit-bench-images), recreating the vhost.
"""

import argparse
import os
import time

# Before Django loads settings: a database and vhost of its own, so this never
# truncates the tests' or the throughput benchmark's tables.
os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kit_bench_images")
os.environ.setdefault("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/kit-bench-images")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_kit")

import hashlib
import inspect
import multiprocessing
import shutil
import uuid
from io import BytesIO
from pathlib import Path

import PIL
from PIL import Image, ImageOps

QUICK = {"images": 8, "rounds": 3}
FULL = {"images": 48, "rounds": 3}
PHOTO_SIZE = (4000, 3000)  # 12 megapixels, a phone's 4:3


def synthetic_photo(seed: int) -> bytes:
    """A 12 MP JPEG with texture everywhere (grain over a fractal and
    gradients), about as costly to decode as a photo; flat colour would
    flatter every pipeline."""
    width, height = PHOTO_SIZE
    grain = Image.effect_noise(PHOTO_SIZE, 20 + seed % 12)
    shift = 0.04 * (seed % 10)
    fractal = Image.effect_mandelbrot(PHOTO_SIZE, (-2.2 + shift, -1.15, 0.9 + shift, 1.15), 96)
    sky = Image.linear_gradient("L").resize(PHOTO_SIZE)
    glow = Image.radial_gradient("L").resize(PHOTO_SIZE)
    if seed % 2:
        sky = sky.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    photo = Image.merge(
        "RGB", (Image.blend(fractal, grain, 0.35), Image.blend(sky, grain, 0.3), Image.blend(glow, fractal, 0.5))
    )
    out = BytesIO()
    photo.save(out, "JPEG", quality=90)
    return out.getvalue()


def synthetic_photos(count: int, *, concurrency: int) -> list[Path]:
    """The first `count` synthetic photos, made once and kept between runs
    in bench/results/ (git-ignored): making them took 5 of this
    benchmark's 18 s in quick mode, and every run then works on the same
    photos. Kept under a name that changes with synthetic_photo's code,
    PHOTO_SIZE and Pillow's version, any of which makes other photos."""
    from bench import harness

    recipe = f"{inspect.getsource(synthetic_photo)}{PHOTO_SIZE}{PIL.__version__}"
    folder = harness.RESULTS_DIR / "photos" / hashlib.sha256(recipe.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo-{seed:03}.jpg" for seed in range(count)]
    if missing := [seed for seed, path in enumerate(paths) if not path.exists()]:
        with _fork_pool(concurrency) as pool:
            for seed, data in zip(missing, pool.map(synthetic_photo, missing), strict=True):
                # Whole or not at all: a run stopped half way leaves no half photo.
                partial = paths[seed].with_suffix(".partial")
                partial.write_bytes(data)
                partial.rename(paths[seed])
    return paths


def naive_renditions(path: Path, out_dir: Path, specs: list) -> None:
    for spec in specs:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if spec.crop:
                out = ImageOps.fit(image, (spec.width, spec.height))
            else:
                out = image.resize((spec.width, round(image.height * spec.width / image.width)))
            out.convert("RGB").save(out_dir / f"{path.stem}-{spec.name}.jpg", "JPEG", quality=spec.quality)


def _naive_one(job: tuple) -> None:
    naive_renditions(*job)


def _limit_one(image_id: str) -> None:
    from media_tasks import services
    from media_tasks.models import Image as ImageRow

    services.renditions_create(image=ImageRow.objects.get(pk=image_id))


def _fork_pool(processes: int):
    # Forked children inherit Django, settings and the MEDIA_ROOT; they must
    # not share the parent's database connection.
    from django.db import connections

    connections.close_all()
    return multiprocessing.get_context("fork").Pool(processes)


class Bench:
    def __init__(self, *, scratch: Path, media: Path, concurrency: int, photos: list[Path]):
        from media_tasks.conf import rendition_specs

        self.scratch, self.media, self.concurrency, self.photos = scratch, media, concurrency, photos
        self.specs = rendition_specs()

    def _empty(self) -> None:
        from django.db import connection

        tables = [
            "media_tasks_rendition",
            "media_tasks_image",
            "media_tasks_imagebatch",
            "jobs_job",
            "django_celery_results_taskresult",
        ]
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")  # other apps point at jobs_job
        shutil.rmtree(self.media, ignore_errors=True)
        self.media.mkdir(parents=True)

    def kit(self, round_number: int) -> float:
        from django.core.files import File
        from django.db.models import Max, Min

        from bench import harness
        from config.celery_app import app as kit_app
        from jobs.models import Job, JobStatus
        from media_tasks import services

        self._empty()
        log_path = self.scratch / f"worker-images-{round_number}.log"
        with harness.Worker(
            name="images",
            settings_module="bench.settings_kit",
            queue="images",
            concurrency=self.concurrency,
            log_path=log_path,
            env={"DJANGO_MEDIA_ROOT": str(self.media)},
            parked=True,
        ) as worker:
            # Committed and published while the worker starts, parked on a
            # queue of its own; it is let at them once it is up.
            for path in self.photos:
                with path.open("rb") as photo:
                    services.image_upload(file=File(photo, name=path.name))
            if (queued := Job.objects.filter(status=JobStatus.QUEUED).count()) != len(self.photos):
                raise RuntimeError(f"Only {queued} of {len(self.photos)} image jobs reached the broker.")
            worker.wait_until_up(kit_app)
            worker.consume(kit_app)

            def drained() -> bool:
                worker.check_alive()
                return Job.objects.filter(finished_at__isnull=False).count() >= len(self.photos)

            harness.wait_until(drained, timeout=120 + 10 * len(self.photos), what=f"the kit's image jobs ({log_path})")
        if (ok := Job.objects.filter(status=JobStatus.SUCCESS).count()) != len(self.photos):
            raise RuntimeError(f"Only {ok} of {len(self.photos)} image jobs succeeded; see {log_path}.")
        window = Job.objects.aggregate(start=Min("started_at"), end=Max("finished_at"))
        return (window["end"] - window["start"]).total_seconds()

    def naive(self, round_number: int) -> float:
        out_dir = self.scratch / "naive"
        out_dir.mkdir(exist_ok=True)
        with _fork_pool(self.concurrency) as pool:
            started = time.perf_counter()
            pool.map(_naive_one, [(path, out_dir, self.specs) for path in self.photos], chunksize=1)
            return time.perf_counter() - started

    def limit(self, round_number: int) -> float:
        from django.core.files import File

        from media_tasks import services
        from media_tasks.models import Image as ImageRow
        from media_tasks.models import Rendition, media_storage

        self._empty()
        ids = []
        for path in self.photos:  # rows and originals as an upload makes them, but no job
            image_id = uuid.uuid4()
            with path.open("rb") as photo:
                name = media_storage().save(services.original_path(image_id), File(photo, name=path.name))
            ImageRow.objects.create(
                id=image_id, original=name, original_name=path.name, original_bytes=path.stat().st_size
            )
            ids.append(str(image_id))
        with _fork_pool(self.concurrency) as pool:
            started = time.perf_counter()
            pool.map(_limit_one, ids, chunksize=1)
            seconds = time.perf_counter() - started
        if (made := Rendition.objects.count()) != len(ids) * len(self.specs):
            raise RuntimeError(f"The limit variant made {made} renditions, not {len(ids) * len(self.specs)}.")
        return seconds


VARIANTS = {
    "kit": "media_tasks.renditions_create jobs through a real worker on RabbitMQ (one decode, cascade resize)",
    "naive": "open + exif_transpose + resize/fit + save per rendition, Pillow defaults, pool of the same size",
    "limit": "services.renditions_create in a pool of the same size, no queue, no job tracking",
}


def run(*, quick: bool, images: int | None = None, rounds: int | None = None, concurrency: int = 2) -> dict:
    """Run every variant `rounds` times on the same photos; return the
    figures (also printed) as a JSON-ready dict."""
    from django.conf import settings
    from django.test.utils import override_settings

    from bench import harness

    preset = QUICK if quick else FULL
    images, rounds = images or preset["images"], rounds or preset["rounds"]
    started_at, scratch, machine = harness.prepare_run()

    photos = synthetic_photos(images, concurrency=concurrency)
    megabytes = sum(path.stat().st_size for path in photos) / len(photos) / 1e6
    print(
        f"{images} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} ({megabytes:.1f} MB each on average), "
        f"{rounds} rounds, {concurrency} processes per variant\n",
        flush=True,
    )

    media = scratch / "media"
    with override_settings(MEDIA_ROOT=str(media)):
        bench = Bench(scratch=scratch, media=media, concurrency=concurrency, photos=photos)
        rates, measurements = harness.rate_rounds(
            list(VARIANTS),
            rounds=rounds,
            count=images,
            unit="images",
            decimals=2,
            measure=lambda name, round_number: getattr(bench, name)(round_number),
        )

    summary = {name: harness.spread(values) for name, values in rates.items()}
    ratios = harness.kit_ratios(rates, summary, others=("naive", "limit"))

    print(f"\n{'variant':<8}{'images/s median':>16}{'min - max':>18}")
    for name, s in summary.items():
        print(f"{name:<8}{s['median']:>16.2f}{s['min']:>10.2f} - {s['max']:.2f}")
    print()
    harness.print_ratios(ratios, width=12)
    return {
        "benchmark": "images",
        "started_at": started_at,
        "machine": machine,
        "parameters": {
            "images": images,
            "rounds": rounds,
            "concurrency": concurrency,
            "photo_size": list(PHOTO_SIZE),
            "mean_photo_bytes": round(megabytes * 1e6),
            "renditions": settings.MEDIA_TASKS_RENDITIONS,
        },
        "variants": VARIANTS,
        "measurements": measurements,
        "summary_images_per_second": summary,
        "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.images", description="Image pipeline benchmark (not a test)."
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['images']} photos x {QUICK['rounds']} rounds")
    parser.add_argument("--images", type=int, help=f"photos per variant and round (default {FULL['images']})")
    parser.add_argument(
        "--rounds", type=int, help=f"rounds, each running every variant once (default {FULL['rounds']})"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="processes per variant (default 2)")
    args = parser.parse_args()

    import django

    django.setup()
    from bench import harness

    harness.report(run(quick=args.quick, images=args.images, rounds=args.rounds, concurrency=args.concurrency))


if __name__ == "__main__":
    main()
