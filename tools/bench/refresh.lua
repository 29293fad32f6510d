-- wrk: refresh-token rotation chains. Each thread (one connection each:
-- run with -c equal to -t) starts from one refresh token of BENCH_TOKENS
-- (space-separated) and always sends the token the last response returned.
dofile(os.getenv("BENCH_DIR") .. "/common.lua")
local tokens = {}
for t in string.gmatch(os.getenv("BENCH_TOKENS") or "", "%S+") do table.insert(tokens, t) end
local n = 0

function setup(thread)
  n = n + 1
  thread:set("token", tokens[n])
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  return wrk.format(nil, "/api/v1/access/refresh", nil, '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
  count_status(status)
  local t = string.match(body, '"refresh_token":"([^"]+)"')
  if t then token = t end
end
