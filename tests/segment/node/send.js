// Sends through the real @segment/analytics-node client, pointed at firstparty.
// Usage: node send.js <host> <writeKey> <prefix>   (host without path, e.g. http://127.0.0.1:8000)
'use strict'
const { Analytics } = require('@segment/analytics-node')

async function main() {
  const [host, writeKey, prefix] = process.argv.slice(2)
  const analytics = new Analytics({
    writeKey,
    host,
    path: '/segment/v1/batch', // firstparty's Segment API lives under /segment
    flushAt: 100,
    maxRetries: 5,
  })
  analytics.on('error', (err) => console.error('segment error', err.code, String(err.reason)))
  const anonymousId = `${prefix}-anon`
  analytics.track({ anonymousId, event: 'Lead', properties: { value: 49 }, messageId: `${prefix}-track` })
  analytics.page({ anonymousId, name: 'Pricing', properties: { url: 'https://www.example.test/pricing?gclid=G1' }, messageId: `${prefix}-page` })
  analytics.identify({ userId: `${prefix}-user`, traits: { email: 'ada@example.test', plan: 'pro' }, messageId: `${prefix}-identify` })
  for (let i = 0; i < 500; i++) {
    analytics.track({ anonymousId, event: 'Bulk', properties: { i }, messageId: `${prefix}-bulk-${i}` })
  }
  // The same messageId again, as an application retry would send it.
  analytics.track({ anonymousId, event: 'Lead', properties: { value: 49 }, messageId: `${prefix}-track` })
  await analytics.closeAndFlush({ timeout: 30000 })
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
