-- PUT a body of BENCH_SIZE bytes to a fresh target from the pool file each request.
-- wrk -s put.lua URL -- POOLFILE NTHREADS SIZE
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "?.lua"
require("pool")

local pool, idx, body, nthreads

function init(args)
    nthreads = tonumber(args[2])
    pool = load_pool(args[1], nthreads)
    body = string.rep("x", tonumber(args[3]))
    idx = 0
end

function request()
    idx = idx + 1
    if idx > #pool then idx = 1 end -- exhausted: repeats show up as 409s in err_status
    return wrk.format("PUT", pool[idx], nil, body)
end
