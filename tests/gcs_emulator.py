"""gcp-storage-emulator (an in-memory fake of Google Cloud Storage's JSON API) with two things
the real service has and the emulator lacks, for tests/test_cloud_storage.py:

* the ``x-goog-generation`` header on every object download, which tensorstore (orbax's
  checkpoints) reads to know which version of an object it has -- without it tensorstore
  fails now and then with "Malformed StorageGeneration";
* ``POST .../o/SRC/moveTo/o/DEST`` (an object move), which gcsfs tries before falling back to
  copy + delete -- without it every rename waits through gcsfs's retries of a 501.

Usage: python tests/gcs_emulator.py start --port=PORT --in-memory --default-bucket=NAME
"""

import sys
from http import HTTPStatus

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj["metageneration"])
    except NotFound:
        pass  # the emulator's own download answers 404
    return _download(request, response, storage, *args, **kwargs)


def move(request, response, storage, *args, **kwargs):
    bucket, source, dest = (request.params[k] for k in ("bucket_name", "object_id", "dest_object_id"))
    try:
        moved = objects._copy(request.base_url, storage, bucket, source, bucket, dest)  # pylint: disable=protected-access
        objects._delete(storage, bucket, source)  # pylint: disable=protected-access
        response.json(moved)
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND


objects.download = download  # before the server's routes are built from it

from gcp_storage_emulator import server  # noqa: E402  pylint: disable=wrong-import-position
from gcp_storage_emulator.__main__ import main  # noqa: E402  pylint: disable=wrong-import-position

server.HANDLERS = ((r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/"
                    r"(?P<dest_object_id>.*[^/]+)$", {server.POST: move}),) + tuple(server.HANDLERS)

if __name__ == "__main__":
    sys.argv[0] = "gcp-storage-emulator"
    sys.exit(main())
