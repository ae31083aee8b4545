"""The audience adapters of the ad platforms: Meta Custom Audiences, Google Customer Match
(Data Manager) and TikTok segments. Each is pure (`audiences.base.AudienceAdapter`); only
`audiences.registry` imports them."""
