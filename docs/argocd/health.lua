-- Argo CD health check for slm.ai/SLMDeployment (resource.customizations.health.slm.ai_SLMDeployment).
-- Maps the operator's status conditions to Argo CD health:
--   no status yet, or status older than the spec (observedGeneration) -> Progressing
--   Degraded=True (bad spec, missing Secret, does not fit, failed quantization) -> Degraded
--   Ready=True                                                         -> Healthy
--   scaled to zero replicas (Available reason ScaledToZero)            -> Suspended
--   anything else (quantizing, pods starting)                          -> Progressing
local hs = {}

local function condition(conditions, ctype)
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function message(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    if c.reason ~= nil and c.reason ~= "" then
      return c.reason .. ": " .. c.message
    end
    return c.message
  end
  return fallback
end

if obj.status == nil or obj.status.conditions == nil or #obj.status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the slm-operator to report status."
  return hs
end

local generation = (obj.metadata ~= nil and obj.metadata.generation) or 0
local observed = obj.status.observedGeneration or 0
if observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the slm-operator to observe generation " .. generation .. "."
  return hs
end

local conditions = obj.status.conditions
local ready = condition(conditions, "Ready")
local degraded = condition(conditions, "Degraded")
local available = condition(conditions, "Available")
local progressing = condition(conditions, "Progressing")

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = message(degraded, "Degraded.")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message(ready, "Ready.")
  return hs
end

if available ~= nil and available.reason == "ScaledToZero" then
  hs.status = "Suspended"
  hs.message = message(available, "Scaled to zero replicas.")
  return hs
end

hs.status = "Progressing"
hs.message = message(progressing, message(ready, "In progress."))
return hs
