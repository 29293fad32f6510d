-- wrk: POST pre-made form bodies (one per line of $BENCH_BODIES, each with
-- its own client assertion, so the load generator signs nothing) to
-- $BENCH_PATH. Thread i of n sends lines i, i+n, i+2n, ...; past the end it
-- starts over, and those replays are refused (counted as non-2xx).
dofile(os.getenv("BENCH_DIR") .. "/common.lua")
local nthreads = 0

function setup(thread)
  nthreads = nthreads + 1
  thread:set("index", nthreads)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  bodies = {}
  local step = tonumber(os.getenv("BENCH_THREADS") or "1")
  local i = 0
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    if i % step == index - 1 then table.insert(bodies, line) end
    i = i + 1
  end
  pos = 0
  path = os.getenv("BENCH_PATH")
end

function request()
  pos = pos % #bodies + 1
  return wrk.format(nil, path, nil, bodies[pos])
end

function response(status, headers, body)
  count_status(status)
end
