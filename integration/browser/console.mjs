// Drives the Switchyard web console in Debian's Chromium (playwright-core) through a list of
// steps; prints one JSON line per `text`/`eval` step and a final {"done": true}. Used by
// tests/browser.rs. Steps: {"goto": url}, {"fill": [selector, value]}, {"click": selector},
// {"wait": selector}, {"text": [name, selector]}, {"eval": [name, js]}, {"sleep": ms},
// {"screenshot": path}.
import { chromium } from 'playwright-core';

const plan = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required'],
});
const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
page.on('pageerror', (e) => process.stderr.write(`[page error] ${e}\n`));
page.on('console', (m) => process.stderr.write(`[page] ${m.text()}\n`));
let step = null;
try {
  for (step of plan.steps) {
    if (step.goto) await page.goto(step.goto);
    else if (step.fill) await page.fill(step.fill[0], step.fill[1]);
    else if (step.click) await page.click(step.click);
    else if (step.wait) await page.waitForSelector(step.wait, { timeout: step.ms || 15000 });
    else if (step.text) console.log(JSON.stringify({ name: step.text[0], value: await page.textContent(step.text[1]) }));
    else if (step.eval) console.log(JSON.stringify({ name: step.eval[0], value: await page.evaluate(step.eval[1]) }));
    else if (step.sleep) await page.waitForTimeout(step.sleep);
    else if (step.screenshot) await page.screenshot({ path: step.screenshot, fullPage: true });
  }
  console.log(JSON.stringify({ done: true }));
} catch (e) {
  const shot = `${plan.artifacts || '/tmp'}/console-failure.png`;
  await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
  console.log(JSON.stringify({ error: String(e), step, screenshot: shot }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
