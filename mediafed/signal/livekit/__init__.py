"""signal/livekit"""
