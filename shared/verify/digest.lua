-- Digest of one chunk of a value, computed inside the server so values never travel for a check.
-- KEYS[1] = key; ARGV[1] = cursor ("0" to start); ARGV[2] = elements per chunk.
-- Returns {type, next cursor ("" when done), chunk digest, element count of the chunk}.
-- Ordered types (string, list, stream) return a SHA1 per chunk that the client chains;
-- unordered types (hash, set, zset) return the XOR of per-element SHA1 prefixes, so SCAN order
-- does not matter. valuedigest.go computes the same digest from a decoded RDB value.
local k = KEYS[1]
local cursor = ARGV[1]
local n = tonumber(ARGV[2])
local t = redis.call('TYPE', k)['ok']

local function lp(s) return #s .. ':' .. s end

-- 64 bits of each element's SHA1 are enough to notice a difference, and half the Lua work.
local function xorhex(acc, h)
  local out = {}
  for i = 0, 1 do
    local a = tonumber(string.sub(acc, i * 8 + 1, i * 8 + 8), 16)
    local b = tonumber(string.sub(h, i * 8 + 1, i * 8 + 8), 16)
    out[#out + 1] = bit.tohex(bit.bxor(a, b), 8)
  end
  return table.concat(out)
end

local zero = string.rep('0', 16)

if t == 'none' then
  return {t, '', '', 0}
elseif t == 'string' then
  local off = tonumber(cursor)
  local size = n * 1024
  local len = redis.call('STRLEN', k)
  local chunk = redis.call('GETRANGE', k, off, off + size - 1)
  local nxt = ''
  if off + size < len then nxt = tostring(off + size) end
  return {t, nxt, redis.sha1hex(chunk), #chunk}
elseif t == 'list' then
  local off = tonumber(cursor)
  local items = redis.call('LRANGE', k, off, off + n - 1)
  local parts = {}
  for i = 1, #items do parts[i] = lp(items[i]) end
  local nxt = ''
  if #items == n then nxt = tostring(off + n) end
  return {t, nxt, redis.sha1hex(table.concat(parts)), #items}
elseif t == 'hash' or t == 'set' or t == 'zset' then
  local res
  if t == 'hash' then
    res = redis.call('HSCAN', k, cursor, 'COUNT', n)
  elseif t == 'zset' then
    res = redis.call('ZSCAN', k, cursor, 'COUNT', n)
  else
    res = redis.call('SSCAN', k, cursor, 'COUNT', n)
  end
  local acc = zero
  local items = res[2]
  local count = 0
  if t == 'hash' then
    for i = 1, #items, 2 do
      acc = xorhex(acc, redis.sha1hex(lp(items[i]) .. items[i + 1]))
      count = count + 1
    end
  elseif t == 'zset' then
    for i = 1, #items, 2 do
      local score = tonumber(items[i + 1])
      if score == 0 then score = 0 end -- -0 and 0 are one score (a listpack stores -0 as 0)
      acc = xorhex(acc, redis.sha1hex(lp(items[i]) .. string.format('%.17g', score)))
      count = count + 1
    end
  else
    for i = 1, #items do
      acc = xorhex(acc, redis.sha1hex(items[i]))
      count = count + 1
    end
  end
  local nxt = res[1]
  if nxt == '0' then nxt = '' end
  return {t, nxt, acc, count}
elseif t == 'stream' then
  local start = '-'
  if cursor ~= '0' then start = '(' .. cursor end
  local entries = redis.call('XRANGE', k, start, '+', 'COUNT', n)
  local parts = {}
  local last = ''
  for i = 1, #entries do
    local e = entries[i]
    last = e[1]
    parts[#parts + 1] = lp(e[1])
    for j = 1, #e[2] do parts[#parts + 1] = lp(e[2][j]) end
  end
  local nxt = ''
  if #entries == n then
    nxt = last
  else
    -- Last chunk: the consumer groups (name, last delivered id, pending count, consumers) count too.
    local groups = redis.call('XINFO', 'GROUPS', k)
    local gs = {}
    for i = 1, #groups do
      local g = groups[i]
      local f = {}
      for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
      gs[#gs + 1] = lp(tostring(f['name'])) .. lp(tostring(f['last-delivered-id'])) ..
        lp(tostring(f['pending'])) .. lp(tostring(f['consumers']))
    end
    table.sort(gs)
    parts[#parts + 1] = 'groups:' .. table.concat(gs)
    parts[#parts + 1] = 'len:' .. redis.call('XLEN', k)
  end
  return {t, nxt, redis.sha1hex(table.concat(parts)), #entries}
else
  return {t, '', 'unsupported', 0}
end
