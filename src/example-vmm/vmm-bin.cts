#!/usr/bin/env node
/**
 * The example VMM as a command: its bundle when built (sys/bundle-runner.cts), else its
 * modules. After a live update the VMM's own start is on its guest's blackout (the
 * real-kernel bench starts it beside luod in the next kernel: docs/vm.md).
 */
import runner = require('../sys/bundle-runner.cjs');

if (!runner.runBundle('vmm')) void import('./main.js');
