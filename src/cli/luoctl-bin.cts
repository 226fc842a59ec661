#!/usr/bin/env node
/** The `luoctl` command: its bundle when built (sys/bundle-runner.cts), else its modules. */
import runner = require('../sys/bundle-runner.cjs');

if (!runner.runBundle('luoctl')) void import('./luoctl.js');
