-- wrk: POST signup with a distinct email per request; counts statuses.
-- Emails: bench-<run>-<thread>-<n>@example.org, so runs never collide.
dofile(os.getenv("BENCH_DIR") .. "/common.lua")
local counter = 0
local run = os.getenv("BENCH_RUN") or tostring(os.time())
local nthreads = 0
tid = 0 -- global: each thread's copy is set by setup()

function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = string.format('{"email":"bench-%s-%d-%d@example.org","password":"correct horse battery"}', run, tid, counter)
  return wrk.format(nil, "/api/v1/access/signup", nil, body)
end

function response(status, headers, body) count_status(status) end
