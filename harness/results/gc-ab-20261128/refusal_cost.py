import asyncio, time, logging, logging.config, sys
import uvicorn.config
from uvicorn.server import ServerState
sys.path.insert(0, "tests")
from test_door import Transport, App, POST
from service.door import Door, AccessLog
from service.admission import Admission
from bentoml._internal.log import SERVER_LOGGING_CONFIG
logging.config.dictConfig(SERVER_LOGGING_CONFIG)
class NullT(Transport):
    def write(self, data): pass
async def main(mode):
    adm = Admission(0.5, 4, 1, 10_000); adm.admit(0)
    attrs = {"admission": adm, "max_body_bytes": 1000, "metrics": None, "access": None}
    if mode != "none":
        a = AccessLog.__new__(AccessLog); a.logger = logging.getLogger("bentoml.access"); a.skip_paths = ()
        a.has_request_content_type = a.has_request_content_length = a.has_response_content_type = a.has_response_content_length = True
        attrs["access"] = a
    cls = type("D", (Door,), attrs)
    config = uvicorn.config.Config(App(), http=cls, lifespan="off", log_config=None); config.load()
    p = cls(config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    p.connection_made(NullT())
    if mode == "nosrc": logging._srcfile = None; logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    n = 30000
    for _ in range(1000): p.data_received(POST)
    t = time.perf_counter()
    for _ in range(n): p.data_received(POST)
    dt = time.perf_counter() - t
    print(f"{mode:6s} {dt/n*1e6:.1f} us/refusal", file=sys.stderr)
for m in sys.argv[1:]:
    asyncio.run(main(m))
if __name__ == "__main__" and "prof" in sys.argv[1:2]:
    pass
