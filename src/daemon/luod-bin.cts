#!/usr/bin/env node
/** The `luod` command: its bundle when built (sys/bundle-runner.cts), else its modules. */
import runner = require('../sys/bundle-runner.cjs');

if (!runner.runBundle('luod')) void import('./main.js');
