-- GET targets from the pool file round-robin.
-- wrk -s get.lua URL -- POOLFILE NTHREADS
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "?.lua"
require("pool")

local pool, idx

function init(args)
    pool = load_pool(args[1], tonumber(args[2]))
    idx = 0
end

function request()
    idx = idx + 1
    if idx > #pool then idx = 1 end
    return wrk.format("GET", pool[idx])
end
