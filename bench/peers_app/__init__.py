"""The peers of the `peers` benchmark (bench/peers.py): the same no-op job
through Procrastinate, django-tasks' database backend, django-q2's ORM
broker, RQ and Dramatiq. Runs in the peers' own virtualenv (.venv-peers,
requirements.txt here), never in the kit's: nothing in it imports the kit."""
