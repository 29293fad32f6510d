-- wrk: POST signup with a distinct email per request; counts statuses.
-- Emails: bench-<run>-<thread>-<n>@example.org, so runs never collide.
local counter = 0
statuses = {}
local threads = {}
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

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, k .. "=" .. v) end
  table.sort(parts)
  io.write("STATUSES " .. table.concat(parts, ",") .. "\n")
end
