-- wrk: POST login for one bench user (BENCH_EMAIL / BENCH_PASSWORD).
dofile(os.getenv("BENCH_DIR") .. "/common.lua")

function setup(thread) table.insert(threads, thread) end

function init(args)
  wrk.method = "POST"
  wrk.path = "/api/v1/access/login"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = string.format('{"email":"%s","password":"%s"}', os.getenv("BENCH_EMAIL"), os.getenv("BENCH_PASSWORD"))
end

function response(status, headers, body) count_status(status) end
