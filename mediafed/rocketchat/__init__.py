"""rocketchat"""
