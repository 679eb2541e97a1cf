"""What the PJSUA2 test scripts share: creating and configuring the library the same way."""

import os
import sys

import pjsua2 as pj


def lib_create(ep):
    """ep.libCreate(), with the lines pjlib prints to stdout sent to stderr: the scripts'
    stdout carries their one-line verdict only."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        ep.libCreate()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def lib_init(ep, user_agent, log_level, log_file=None, log_file_level=4):
    """One thread (events handled by the script's loop), no VAD, no echo canceller,
    8 kHz mono: what arrives is what the server sent."""
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = user_agent
    file_level = log_file_level if log_file else 0
    cfg.logConfig.level = max(log_level, file_level)
    cfg.logConfig.consoleLevel = log_level
    if log_file:
        cfg.logConfig.filename = log_file
    cfg.medConfig.noVad = True
    cfg.medConfig.ecTailLen = 0
    cfg.medConfig.clockRate = 8000
    cfg.medConfig.sndClockRate = 8000
    cfg.medConfig.channelCount = 1
    ep.libInit(cfg)
