include $(sort $(wildcard $(BR2_EXTERNAL_CUBE_PATH)/../package/*/*.mk))
