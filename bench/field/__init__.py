"""The field benchmark: kq beside the Python job queues on Kafka people pick instead.

taskiq (``taskiq-aio-kafka``), FastStream's Kafka broker, Celery on kombu's
``confluentkafka`` transport and Faust (``faust-streaming``) each run in a
virtual environment of their own (``bench.field.envs``), on the same local
broker and in the same run as kq. ``python -m bench --field`` runs it
(``bash scripts/bench.sh --field``); ``bench.field.cli`` has the options.
"""
