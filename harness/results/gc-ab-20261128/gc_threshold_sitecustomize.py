import gc, os
th = os.environ.get("GC_THRESHOLD")
if th:
    gc.set_threshold(*map(int, th.split(",")))
