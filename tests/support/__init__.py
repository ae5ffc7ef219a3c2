"""Real parts for the tests, one module a concern: the local RabbitMQ
(rabbitmq.py), an HTTP origin (origin.py), the programs as subprocesses
(stack.py), an S3 server (s3.py), a frontend in the test's own process
(in_process.py), settings (settings.py), ports and waiting, pictures
(images.py), load (load.py) and the clusters of the node-loss tests.

Nothing here is a mock: the origin is a Tornado app on a loopback port, the
broker is the local RabbitMQ (one vhost per stack, deleted afterwards), and
the frontend and processors run as the same subprocesses supervisord runs.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
