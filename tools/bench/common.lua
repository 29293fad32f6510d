-- Shared by the wrk scripts (loaded with dofile from $BENCH_DIR): counts
-- response statuses per thread and prints one "STATUSES 201=…,503=…" line
-- that tools/bench.py reads. Each script's setup() adds its thread to
-- `threads` and its response() calls count_status().
statuses = {}
threads = {}

function count_status(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, k .. "=" .. v) end
  table.sort(parts)
  io.write("STATUSES " .. table.concat(parts, ",") .. "\n")
end
