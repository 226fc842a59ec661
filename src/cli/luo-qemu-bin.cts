#!/usr/bin/env node
/**
 * The `luo-qemu` command: its bundle when built (sys/bundle-runner.cts), else its modules.
 * After a live update luo-qemu's own start is on the VM's blackout (docs/qemu.md).
 */
import runner = require('../sys/bundle-runner.cjs');

if (!runner.runBundle('luo-qemu')) void import('./luo-qemu.js');
