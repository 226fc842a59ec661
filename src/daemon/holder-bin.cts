#!/usr/bin/env node
/** The fd holder process luod starts: its bundle when built (sys/bundle-runner.cts), else its modules. */
import runner = require('../sys/bundle-runner.cjs');

if (!runner.runBundle('holder')) void import('./holder-main.js');
