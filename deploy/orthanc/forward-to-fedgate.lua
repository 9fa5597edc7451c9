-- Forward every stable study to fedgate over DICOMweb (STOW-RS), as a PACS's auto-routing
-- would. Orthanc calls OnStableStudy once a study has received nothing for "StableAge"
-- seconds. Each series is sent when it has instances fedgate has not been sent yet: the
-- instance count sent last time is kept in the series' metadata (UserMetadata
-- "FedgateForwardedInstances"), so a study that grows later (late instances, or fedgate's
-- own SR and SEG arriving back) is not sent again whole, only its changed series.
-- The DICOMweb server "fedgate" is declared in orthanc.json ("DicomWeb" > "Servers").

local METADATA = 'FedgateForwardedInstances'

local function forwardedCount(seriesId)
  local ok, value = pcall(RestApiGet, '/series/' .. seriesId .. '/metadata/' .. METADATA)
  if ok then return value end
  return ''
end

function OnStableStudy(studyId, tags, metadata)
  local resources = {}
  local counts = {}
  for _, series in pairs(ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))) do
    local count = tostring(#series['Instances'])
    if forwardedCount(series['ID']) ~= count then
      table.insert(resources, series['ID'])
      counts[series['ID']] = count
    end
  end
  if #resources == 0 then
    return
  end
  local body = DumpJson({ Resources = resources, Synchronous = true })
  local ok, answer = pcall(RestApiPost, '/dicom-web/servers/fedgate/stow', body)
  if not ok then
    PrintRecursive('fedgate: forwarding study ' .. studyId .. ' failed; it will be retried '
      .. 'when the study changes, or send it again from the Orthanc UI')
    return
  end
  for seriesId, count in pairs(counts) do
    RestApiPut('/series/' .. seriesId .. '/metadata/' .. METADATA, count)
  end
  print('fedgate: forwarded ' .. #resources .. ' series of study ' .. studyId)
end
