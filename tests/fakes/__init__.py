"""Fakes of the ad platforms: real HTTP servers on 127.0.0.1 enforcing each platform's rules.

`server.FakeServer` is the shared base (serving, recording, scripted failures) and `server.send`
plays the worker's transport; `meta.FakeMeta` and `tiktok.FakeTikTok` implement the checklists
of destinations.md sections 1.14 and 2. A new fake subclasses `FakeServer` and overrides `handle`;
import them as `from tests.fakes import server` (fakes import each other relatively).
"""
