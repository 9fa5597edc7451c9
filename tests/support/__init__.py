"""Harnesses that start the real parts the tests run against: Orthanc, the gateway, tools."""
