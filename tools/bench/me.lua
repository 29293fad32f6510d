-- wrk: GET /me with one bearer token (BENCH_TOKEN); counts statuses. Used
-- where /me runs beside other load for a fixed time (storm, mixed run).
dofile(os.getenv("BENCH_DIR") .. "/common.lua")

function setup(thread) table.insert(threads, thread) end

function init(args)
  wrk.path = "/api/v1/access/me"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
end

function response(status, headers, body) count_status(status) end
