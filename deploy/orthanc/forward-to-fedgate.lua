-- Forward every stable study to fedgate over DICOMweb (STOW-RS), as a PACS's auto-routing
-- would. Orthanc calls OnStableStudy once a study has received nothing for "StableAge"
-- seconds. Each series is sent when it has instances fedgate has not been sent yet: the
-- instance count sent last time is kept in the series' metadata (UserMetadata
-- "FedgateForwardedInstances"), so a study that grows later (late instances) is not sent
-- again whole, only its changed series.
-- fedgate's own results (SR and SEG whose Station Name is FEDGATE) are never sent back to it.
-- The STOW carries the header "Fedgate-Study-Stable": Orthanc has already waited for the
-- study to be stable, so fedgate analyses it at once instead of waiting a second time.
-- The DICOMweb server "fedgate" is declared in orthanc.json ("DicomWeb" > "Servers").
-- Its "Authorization" header should carry a token with fedgate's "forwarder" role, not
-- "admin": forwarding needs STOW-RS only, and a forwarder token opens no images (docs/roles.md).

local METADATA = 'FedgateForwardedInstances'
local RESULTS_STATION_NAME = 'FEDGATE'

local function forwardedCount(seriesId)
  -- List the series' metadata first: asking for one it does not have is an error that
  -- Orthanc logs (even under pcall), once for every new series.
  for _, name in pairs(ParseJson(RestApiGet('/series/' .. seriesId .. '/metadata'))) do
    if name == METADATA then
      return RestApiGet('/series/' .. seriesId .. '/metadata/' .. METADATA)
    end
  end
  return ''
end

function OnStableStudy(studyId, tags, metadata)
  local resources = {}
  local counts = {}
  for _, series in pairs(ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))) do
    local count = tostring(#series['Instances'])
    local own = series['MainDicomTags']['StationName'] == RESULTS_STATION_NAME
    if not own and forwardedCount(series['ID']) ~= count then
      table.insert(resources, series['ID'])
      counts[series['ID']] = count
    end
  end
  if #resources == 0 then
    return
  end
  local body = DumpJson({
    Resources = resources,
    Synchronous = true,
    HttpHeaders = { ['Fedgate-Study-Stable'] = 'Orthanc StableStudy' },
  })
  -- Orthanc's Lua RestApiPost does not raise when the call fails (a 401 or 5xx of the gateway,
  -- a refused connection): it logs the error and returns nil. Either way nothing is recorded
  -- as forwarded, so the series goes again when the study changes.
  local ok, answer = pcall(RestApiPost, '/dicom-web/servers/fedgate/stow', body)
  if not ok or answer == nil then
    PrintRecursive('fedgate: forwarding study ' .. studyId .. ' failed; it will be retried '
      .. 'when the study changes, or send it again from the Orthanc UI')
    return
  end
  for seriesId, count in pairs(counts) do
    RestApiPut('/series/' .. seriesId .. '/metadata/' .. METADATA, count)
  end
  print('fedgate: forwarded ' .. #resources .. ' series of study ' .. studyId)
end
